"""The stability stage in the job's own order: ``settings`` (config section ``stability``),
``starts`` (rule ``stability_starts`` and start selection), ``run`` (the failure detector and
one MD run), ``analysis`` (drift, structure, relabel, summary), ``structure`` (coordination and
RDF), ``job`` (rules ``stability`` and ``stability_reference``), ``curves`` (rule
``stability_curves``). docs/stability.md describes the protocol and the pass/fail rule."""
