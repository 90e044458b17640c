"""The experiment layer: prune-retrain runs as the scripts make them.

Configuration (:mod:`~pruning.experiment.config`), the train loop
(:mod:`~pruning.experiment.pipeline`) and its compiled steps
(:mod:`~pruning.experiment.steps`), data parallelism
(:mod:`~pruning.experiment.parallel`), checkpoints
(:mod:`~pruning.experiment.checkpoints`), reports
(:mod:`~pruning.experiment.report`) and export of a run to the compact file
(:mod:`~pruning.experiment.export`). It may import tfds, grain, orbax,
matplotlib and :mod:`models`; the core never imports it.
"""
