"""Flow-agnostic stages on the native core: pattern compilation, flattening,
matching, and the gc pause the passes share."""
