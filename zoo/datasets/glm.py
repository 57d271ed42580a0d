"""Data sets for the glm models. (Being written.)"""
