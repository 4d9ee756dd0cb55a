"""Preprocessing: the one case pipeline shared by training and prediction, its inverse, and SAM input helpers."""
