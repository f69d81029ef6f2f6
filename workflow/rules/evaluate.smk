# Evaluation (and optional fine-tuning) of the pretrained model at one depth V (a GPU job).
rule evaluate:
    input:
        config=snapshot("evaluate"),
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
        "qernel evaluate --config {input.config} --sweep {wildcards.sweep} --depth {wildcards.V}"
        " --checkpoint {input.model} --out {output.evaluation} >> {log} 2>&1"
