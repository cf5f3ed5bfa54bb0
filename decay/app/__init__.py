"""The ``decay`` command-line program, built on the library: ``compare``, ``sweep``,
``convert`` and ``example`` (:mod:`decay.app.cli`), with the NumPy models and the data
sets they train on.

The library never imports this package, so ``import decay`` stays light; only the
lazy attribute ``decay.models`` (:mod:`decay.app.models`) points here.
"""
