"""scikit-learn-style estimators. Every one is the same model and one loss:

    [Embedding] -> recurrent stack (LSTM | GRU | RNN) -> Dense head
     tokens only                                          the last valid step (classifiers,
                                                          regressors) or every step (taggers,
                                                          sequence regressors)

The public classes choose the cell, the head's reach and the loss; the rest is shared:
_inputs.py (reading X, y, weights), _network.py (the model), _tasks.py (classification
and regression on rows), _training.py (the loop), _persistence.py (model files),
_base.py (scikit-learn plumbing, fit and predict), _classes.py (the public classes).
"""
from ._classes import (GRUClassifier, GRURegressor, GRUSequenceRegressor, GRUTagger,
                       LSTMClassifier, LSTMRegressor, LSTMSequenceRegressor, LSTMTagger,
                       RNNClassifier, RNNRegressor, RNNSequenceRegressor, RNNTagger)
from ._inputs import make_rng as _rng  # noqa: F401  (tests rebuild fit's draws with it)
from ._persistence import load

__all__ = ["LSTMClassifier", "GRUClassifier", "RNNClassifier",
           "LSTMRegressor", "GRURegressor", "RNNRegressor",
           "LSTMTagger", "GRUTagger", "RNNTagger",
           "LSTMSequenceRegressor", "GRUSequenceRegressor", "RNNSequenceRegressor", "load"]

ESTIMATORS = {name: globals()[name] for name in __all__ if name != "load"}
