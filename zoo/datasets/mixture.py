"""Data sets for the mixture models. (Being written.)"""
