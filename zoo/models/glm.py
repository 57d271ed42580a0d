"""Generalised linear models: robust (Student-t), Poisson, negative-binomial, ordinal logistic
and horseshoe regression. (Being written.)"""
