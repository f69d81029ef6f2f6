# Pretraining of the shared conditioned model over all depths of a sweep (one GPU job).
# The engine keeps its resume checkpoints in results/<sweep>/pretrain/checkpoints/, which is
# deliberately NOT an output: Snakemake deletes the outputs of a killed or failed job, and the
# checkpoints must survive so that the restarted job resumes instead of starting over. One set
# per run-defining config: a set of another config waits, unchanged, in checkpoints.<hash>/ and
# is resumed when that config comes back (qernel.checkpoint.claim; config/README.md).
# model.msgpack is a copy of the final checkpoint. The log is appended to, never truncated.
rule pretrain:
    input:
        config=snapshot("pretrain"),
        compute=compute_snapshot("pretrain"),
        hartree_fock=hartree_fock_first,
    output:
        train=sweep_file("{sweep}", "pretrain", "train.nc"),
        model=sweep_file("{sweep}", "pretrain", "model.msgpack"),
    params:
        out_dir=output_dir("model"),
    log:
        sweep_file("{sweep}", "logs", "pretrain.log"),
    benchmark:
        sweep_file("{sweep}", "benchmarks", "pretrain.tsv")
    threads: rule_threads("pretrain")
    resources:
        **rule_resources("pretrain"),
    conda:
        CONDA_ENV
    shell:
        "qernel pretrain --config {input.config:q} --config {input.compute:q} --sweep {wildcards.sweep:q}"
        " --out-dir {params.out_dir:q} --model-out {output.model:q} >> {log:q} 2>&1"
