"""Reports: self-contained HTML (every model output escaped), figures, CSV exports.

- ``html``: the Jinja environment (autoescape always on) and the ``eval`` report;
- ``experiment_report``: ``render_experiment_report(result, records, out)``, which puts together
  ``data`` (the typed result's sections and indexes), ``sections``/``samples`` (the page's rows as text),
  ``tables`` (``tables/*.csv``), ``figures`` (``figures/*.png``) and ``templates/experiment.html.j2``;
- ``format``: how numbers print (``pct`` is the package's one percent formatter).
"""
