"""``egkd report``: an experiment's students compared over seeds, as HTML, DVC metrics and plot data.

* :mod:`~pipeline.report.data`: evaluations and training logs read and aggregated over seeds;
* :mod:`~pipeline.report.sets`: every variant on every evaluation set (held-out and shifted data);
* :mod:`~pipeline.report.heatmaps`: teacher and student explanations of a few dev sentences;
* :mod:`~pipeline.report.html` and :mod:`~pipeline.report.svg`: the self-contained page;
* :mod:`~pipeline.report.plots`: the CSVs behind ``dvc plots``;
* :mod:`~pipeline.report.build`: the whole report as one call.
"""
