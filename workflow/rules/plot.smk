# The figures of a sweep (PNG for the report, with captions from workflow/report/, and PDF).
rule plot:
    input:
        config=snapshot("analysis"),
        phase_diagram=sweep_file("{sweep}", "phase_diagram.nc"),
        train=sweep_file("{sweep}", "pretrain", "train.nc"),
    output:
        png=[
            report(
                path,
                caption=f"../report/{FIGURES[name]}.rst",
                category="Sweep {sweep}",
                labels={"sweep": "{sweep}", "figure": name},
            )
            for name, path in zip(FIGURES, figure_files("{sweep}", "png"))
        ],
        pdf=figure_files("{sweep}", "pdf"),
    params:
        out_dir=output_dir("pdf"),
    log:
        sweep_file("{sweep}", "logs", "plot.log"),
    benchmark:
        sweep_file("{sweep}", "benchmarks", "plot.tsv")
    threads: rule_threads("plot")
    resources:
        **rule_resources("plot"),
    conda:
        CONDA_ENV
    shell:
        "qernel plot --config {input.config:q} --sweep {wildcards.sweep:q} --phase-diagram {input.phase_diagram:q}"
        " --train {input.train:q} --out-dir {params.out_dir:q} >> {log:q} 2>&1"
