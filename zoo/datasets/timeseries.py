"""Data sets for the timeseries models. (Being written.)"""
