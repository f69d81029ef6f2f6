# What each stage of a sweep depends on (qernel.config.STAGE_KEYS: pretrain, evaluate, and
# "analysis" for observables, aggregate and plot), as Snakemake validated it, written to
# results/<sweep>/config/<stage>.yaml. The qernel jobs read these snapshots, so each job sees
# exactly the validated config whatever --configfile/--config were given. A snapshot is
# rewritten only when its own parts of the sweep change (the params rerun trigger), and the
# stages downstream of it rerun then (newer input): editing a sweep's evaluate options reruns
# its evaluations but not its pretraining; resources and description change nothing.
rule sweep_config:
    output:
        sweep_file("{sweep}", "config", "{stage}.yaml"),
    params:
        text=lambda wildcards: qconfig.sweep_snapshot(
            wildcards.sweep, config["sweeps"][wildcards.sweep], wildcards.stage
        ),
    log:
        sweep_file("{sweep}", "logs", "sweep_config", "{stage}.log"),
    benchmark:
        sweep_file("{sweep}", "benchmarks", "sweep_config", "{stage}.tsv")
    localrule: True
    run:
        Path(output[0]).write_text(params.text, encoding="utf-8")
