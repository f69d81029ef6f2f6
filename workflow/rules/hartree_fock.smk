# The Hartree–Fock reference of a sweep (qernel.reference): symmetry-broken unrestricted HF at
# every depth (band, random and crystal-seeded starts, the lowest converged kept), one CPU job
# per sweep. Its own config snapshot holds the system, the depths and the sweep's hartree_fock
# options, so it reruns only when those change. A depth whose HF does not converge is NaN with
# its reason (the job still succeeds), so the VMC outputs never wait on HF.

#: Resources of the HF job: one CPU, no GPU (the 3x3 demo takes minutes; larger supercells are
#: bounded by hartree_fock.max_plane_waves).
HF_RESOURCES = {"runtime": 60, "mem_mb": 2000, "cpus_per_task": 1, "gpu": 0}

from qernel.reference import hartree_fock_snapshot


rule hartree_fock_config:
    output:
        sweep_file("{sweep}", "config", "hartree_fock.yaml"),
    params:
        text=lambda wildcards: hartree_fock_snapshot(wildcards.sweep, config["sweeps"][wildcards.sweep]),
    log:
        sweep_file("{sweep}", "logs", "sweep_config", "hartree_fock.log"),
    benchmark:
        sweep_file("{sweep}", "benchmarks", "sweep_config", "hartree_fock.tsv")
    localrule: True
    run:
        Path(output[0]).write_text(params.text, encoding="utf-8")


rule hartree_fock:
    input:
        config=sweep_file("{sweep}", "config", "hartree_fock.yaml"),
    output:
        hartree_fock=sweep_file("{sweep}", "hartree_fock.nc"),
    log:
        sweep_file("{sweep}", "logs", "hartree_fock.log"),
    benchmark:
        sweep_file("{sweep}", "benchmarks", "hartree_fock.tsv")
    threads: 1
    resources:
        **HF_RESOURCES,
    conda:
        CONDA_ENV
    shell:
        "OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 qernel hartree-fock --config {input.config}"
        " --sweep {wildcards.sweep} --out {output.hartree_fock} >> {log} 2>&1"
