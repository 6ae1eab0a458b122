"""Datasets: downloads in the libraries' own layouts, one-read loaders, demo data, splits."""
