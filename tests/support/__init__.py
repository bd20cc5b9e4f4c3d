"""Helpers shared by the tests (one copy each): the model corpus, the exactness
contract against the reference, and builders of the native core's arrays."""
