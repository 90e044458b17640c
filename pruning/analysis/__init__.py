"""Analysis on top of the core: how much each layer can lose, and what pruning did.

* :mod:`~pruning.analysis.sensitivity`: prune one layer at a time, no
  retraining, and measure a metric (Han et al. 2015, §5, Fig. 6);
* :mod:`~pruning.analysis.thresholds`: per-layer targets read off those
  curves within an accuracy budget;
* :mod:`~pruning.analysis.distributions`: weight histograms before and after
  pruning and retraining (Fig. 7);
* :mod:`~pruning.analysis.dropout`: the retraining dropout rate of §3.2;
* :mod:`~pruning.analysis.evaluation`: classification error of a model.
"""

from pruning.analysis.distributions import plot_weight_distributions, weight_histograms
from pruning.analysis.dropout import adjusted_dropout_rate
from pruning.analysis.evaluation import classification_error
from pruning.analysis.sensitivity import LayerCurve, SensitivityResult, sensitivity_analysis
from pruning.analysis.thresholds import LayerThreshold, Thresholds, choose_thresholds

__all__ = [
  'LayerCurve',
  'LayerThreshold',
  'SensitivityResult',
  'Thresholds',
  'adjusted_dropout_rate',
  'choose_thresholds',
  'classification_error',
  'plot_weight_distributions',
  'sensitivity_analysis',
  'weight_histograms',
]
