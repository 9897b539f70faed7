"""Training machinery: the training controls and tf.distribute orchestration, the transfer-learning strategies
(with the feature cache) and training from scratch. The train and build stages call it."""
