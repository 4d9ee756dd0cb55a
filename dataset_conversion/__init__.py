"""Converters from public datasets, and the synthetic multi-domain generator, to the raw layout."""
