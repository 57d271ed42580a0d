"""Gaussian-process models. (Being written.)"""
