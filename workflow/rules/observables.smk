# Observables (energies with blocking errors, density, structure factor) at one depth V.
rule observables:
    input:
        config=snapshot("analysis"),
        evaluation=sweep_file("{sweep}", "depth", "{V}", "evaluation.nc"),
    output:
        observables=sweep_file("{sweep}", "depth", "{V}", "observables.nc"),
    log:
        sweep_file("{sweep}", "logs", "observables", "{V}.log"),
    benchmark:
        sweep_file("{sweep}", "benchmarks", "observables", "{V}.tsv")
    threads: rule_threads("observables")
    resources:
        **rule_resources("observables"),
    conda:
        CONDA_ENV
    shell:
        "qernel observables --config {input.config:q} --sweep {wildcards.sweep:q} --depth {wildcards.V:q}"
        " --evaluation {input.evaluation:q} --out {output.observables:q} >> {log:q} 2>&1"
