"""Data sets for the gp models. (Being written.)"""
