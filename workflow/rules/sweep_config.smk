# What each stage of a sweep reads (qernel.config.STAGE_KEYS: pretrain, evaluate, and
# "analysis" for observables, aggregate and plot), resolved and validated by Snakemake, in two
# snapshots per stage that the qernel jobs read (`--config RUN --config COMPUTE`), so each job
# sees exactly the validated config whatever --configfile/--config were given:
#
#   results/<sweep>/config/<stage>.yaml          the run and progress keys (analysis: every key)
#   results/<sweep>/config/<stage>.compute.yaml  the compute keys (pretrain and evaluate)
#
# Each is rewritten whenever its text changes (the params rerun trigger), a local job of a
# millisecond. A rewritten run snapshot reruns its stage and what follows (a newer input): a new
# run, or with a raised pretrain.steps a run that continues from its last checkpoint. The compute
# snapshot is `ancient` input: an edit of log_every, max_vmap_batch_size or another compute key
# reruns nothing, and the next job of the stage (after a failure, say) uses the new value.
# Resources and description are in neither: they change nothing (qernel.config.KEY_CLASSES).
rule sweep_config:
    output:
        sweep_file("{sweep}", "config", "{stage}.yaml"),
    params:
        text=lambda wildcards: SWEEPS[wildcards.sweep].snapshot(wildcards.stage),
    log:
        sweep_file("{sweep}", "logs", "sweep_config", "{stage}.log"),
    threads: 1
    resources:
        **LOCAL_RESOURCES,
    conda:
        CONDA_ENV
    shell:
        "printf '%s' {params.text:q} > {output:q} 2> {log:q}"


rule sweep_compute_config:
    output:
        sweep_file("{sweep}", "config", "{compute_stage}.compute.yaml"),
    params:
        text=lambda wildcards: SWEEPS[wildcards.sweep].snapshot(wildcards.compute_stage, compute=True),
    log:
        sweep_file("{sweep}", "logs", "sweep_config", "{compute_stage}.compute.log"),
    threads: 1
    resources:
        **LOCAL_RESOURCES,
    conda:
        CONDA_ENV
    shell:
        "printf '%s' {params.text:q} > {output:q} 2> {log:q}"
