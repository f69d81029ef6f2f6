# The Hartree–Fock reference of a sweep (qernel.reference): symmetry-broken unrestricted HF at
# every depth (band, random and crystal-seeded starts, the lowest converged kept), one CPU job
# per sweep. Its own config snapshot holds the system, the depths and the sweep's hartree_fock
# options, so it reruns only when those change. A depth whose HF does not converge is NaN with
# its reason (the job still succeeds), so the VMC outputs never wait on HF.

rule hartree_fock_config:
    output:
        sweep_file("{sweep}", "config", "hartree_fock.yaml"),
    params:
        text=lambda wildcards: qconfig.hartree_fock_snapshot(wildcards.sweep, SWEEPS[wildcards.sweep].raw),
    log:
        sweep_file("{sweep}", "logs", "sweep_config", "hartree_fock.log"),
    threads: 1
    resources:
        **LOCAL_RESOURCES,
    conda:
        CONDA_ENV
    shell:
        "printf '%s' {params.text:q} > {output:q} 2> {log:q}"


rule hartree_fock:
    input:
        config=sweep_file("{sweep}", "config", "hartree_fock.yaml"),
    output:
        hartree_fock=sweep_file("{sweep}", "hartree_fock.nc"),
    log:
        sweep_file("{sweep}", "logs", "hartree_fock.log"),
    benchmark:
        sweep_file("{sweep}", "benchmarks", "hartree_fock.tsv")
    threads: rule_threads("hartree_fock")
    resources:
        **rule_resources("hartree_fock"),
    conda:
        CONDA_ENV
    shell:
        "OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 qernel hartree-fock --config {input.config:q}"
        " --sweep {wildcards.sweep:q} --out {output.hartree_fock:q} --workers {threads} >> {log:q} 2>&1"
