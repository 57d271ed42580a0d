"""Time-series models. (Being written.)"""
