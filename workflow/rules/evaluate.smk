# Evaluation (and optional fine-tuning) of the pretrained model at one depth V (a GPU job).
rule evaluate:
    input:
        config=snapshot("evaluate"),
        compute=compute_snapshot("evaluate"),
        model=sweep_file("{sweep}", "pretrain", "model.msgpack"),
    output:
        evaluation=sweep_file("{sweep}", "depth", "{V}", "evaluation.nc"),
    log:
        sweep_file("{sweep}", "logs", "evaluate", "{V}.log"),
    benchmark:
        sweep_file("{sweep}", "benchmarks", "evaluate", "{V}.tsv")
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    conda:
        CONDA_ENV
    shell:
        "qernel evaluate --config {input.config:q} --config {input.compute:q} --sweep {wildcards.sweep:q} --depth {wildcards.V:q}"
        " --checkpoint {input.model:q} --out {output.evaluation:q} >> {log:q} 2>&1"
