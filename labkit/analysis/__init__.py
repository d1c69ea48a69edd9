"""Analysis of results directories (docs/results.md): loaders, statistics, tables, figures, reports, compare.

Reads results files only; never needs a running lab. Heavy imports (pandas, matplotlib, seaborn) happen
inside the submodules, so ``import labkit.analysis`` itself is cheap.

    from labkit.analysis.load import load_run
    from labkit.analysis.report import write_report
    from labkit.analysis.compare import write_compare
"""
