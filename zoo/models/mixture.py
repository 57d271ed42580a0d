"""Mixture models. (Being written.)"""
