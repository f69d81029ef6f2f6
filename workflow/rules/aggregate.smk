# The phase diagram of a sweep: every depth's observables in one dataset over V.
rule aggregate:
    input:
        config=snapshot("analysis"),
        observables=lambda wildcards: depth_files(wildcards.sweep, "observables.nc"),
        hartree_fock=sweep_file("{sweep}", "hartree_fock.nc"),
    output:
        phase_diagram=sweep_file("{sweep}", "phase_diagram.nc"),
    log:
        sweep_file("{sweep}", "logs", "aggregate.log"),
    benchmark:
        sweep_file("{sweep}", "benchmarks", "aggregate.tsv")
    threads: rule_threads("aggregate")
    resources:
        **rule_resources("aggregate"),
    conda:
        CONDA_ENV
    shell:
        "qernel aggregate --config {input.config:q} --sweep {wildcards.sweep:q}"
        " --out {output.phase_diagram:q} --hartree-fock {input.hartree_fock:q} {input.observables:q} >> {log:q} 2>&1"
