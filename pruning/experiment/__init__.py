"""The experiment layer: prune-retrain runs as the scripts make them.

Configuration and recipes (:mod:`~pruning.experiment.config`), the command
line the scripts share (:mod:`~pruning.experiment.cli`), the train loop
(:mod:`~pruning.experiment.pipeline`) over its explicit state
(:mod:`~pruning.experiment.run_state`), its compiled steps
(:mod:`~pruning.experiment.steps`) and automatic targets
(:mod:`~pruning.experiment.auto_targets`), the run directory's layout
(:mod:`~pruning.experiment.run_dir`), data parallelism
(:mod:`~pruning.experiment.parallel`), checkpoints
(:mod:`~pruning.experiment.checkpoints`), reports
(:mod:`~pruning.experiment.report`) and export of a run to the compact file
(:mod:`~pruning.experiment.export`). It may import tfds, grain, orbax,
matplotlib and :mod:`models`; the core never imports it.
"""
