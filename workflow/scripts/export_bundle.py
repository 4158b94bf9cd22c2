"""Rule export_bundle: one fine-tuned model and everything needed to use it, in one folder."""

from workflow.bundle import export_bundle
from workflow.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    inputs, params, wildcards = snakemake.input, snakemake.params, snakemake.wildcards  # noqa: F821
    export_bundle(
        variant=wildcards.variant,
        cohort=wildcards.cohort,
        seed=int(wildcards.seed),
        weights=inputs.weights,
        finetune_metrics=inputs.finetune_metrics,
        eval_metrics=inputs.eval_metrics,
        column_definitions=inputs.column_definitions,
        table_columns=inputs.table_columns,
        stats=inputs.stats,
        header_bank=inputs.header_bank,
        template={"head": inputs.template_head, "crop": inputs.template_crop, "brainmask": inputs.template_brainmask},
        model_settings=dict(params.model),
        finetune_settings=dict(params.finetune),
        preprocess_settings=dict(params.preprocess),
        tables_settings=dict(params.tables),
        encoder=params.encoder,
        outputs=dict(snakemake.output.items()),  # noqa: F821
    )
