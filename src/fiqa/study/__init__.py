"""The reproduction study: one prepared training set, labels of every method, one regressor per
label method, and the blind cross-model evaluation of all of them (``fiqa.study.run``)."""
