"""L2O-Scale: the hierarchical (3-level GRU) learned optimizer. Not implemented yet."""
