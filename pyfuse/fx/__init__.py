"""The module-level FX fusion pass (torch.ao's ``fuse`` / ``fuse_fx``), one module
per stage; :mod:`pyfuse.fx.pipeline` runs them in order."""
