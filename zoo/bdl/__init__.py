"""Bayesian deep learning: networks whose predictions carry their uncertainty.

Every method here fits on standardised inputs and targets and returns an object with
``predict(x, num_samples) -> RegressionPredictive | ClassificationPredictive``
(``zoo.uncertainty``), so metrics, calibration and the uncertainty split are written once.
"""
