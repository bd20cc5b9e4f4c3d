"""The torch.export / pt2e flow: BatchNorm folds on aten graphs.

Stages, one module each, imports flowing down the list: ``ops`` (the aten ops and
their argument positions), ``match`` (BatchNorm sites, found by the native
automaton), ``plan`` (which sites fold, and why others do not), ``weights`` (the
folded tensors), ``inplace`` (the in-place GraphModule edit of the pt2e flow).
The public entry points are ``pyfuse.pt2e`` and ``pyfuse.fold_batch_norm``.
"""
