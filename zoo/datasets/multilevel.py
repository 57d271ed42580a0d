"""Data sets for the multilevel models. (Being written.)"""
