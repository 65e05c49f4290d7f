"""edgeslim: pretrained Transformer -> small, fast, verified ONNX artifact.

Where things live. Three layers; a module imports only its own layer and those below
(tests/test_layers.py checks it, and that there is no import cycle):

runner      cli.py             the typer app (each step's command, loaded when used; run, summary, ...)
            pipeline.py        a recipe's run: plan, cache keys, reuse or run each step, report
            recipe.py          Recipe: YAML -> validated model; steps: the step configs tagged by type
steps       steps/__init__.py  the step registry, run_single (one step into one output), present
            steps/NAME.py      one per step type: Config, run(src, cfg, out) -> summary (prints
                               nothing), command (the CLI), optionally render (summary -> text)
library     config.py          StepConfig (base of every step Config), make_config, explain
            train/             the training layer: configs, loop, checkpoint, task glue, batches,
                               losses, students, distillation and low-bit runs (train/__init__.py)
  compress  pruning.py         structured pruning (heads, FFN neurons, layers)
            sparsity.py        unstructured pruning while training
            simplify.py        activation swap, layer sharing, vocabulary trimming
            shapes.py          student shape grid, latency filter, Pareto sets
            onnx_export.py     model -> ONNX artifact, parity-checked (export step's Config)
            fusion.py          onnxruntime fusions, coverage report (optimize step's Config)
            quantization.py    int8/int4/fp16 with onnxruntime's tooling
            quant_search.py    quantize --max-drop: keep the most sensitive nodes fp32
            lowbit.py          QAT and ternary/binary Linear layers (fake quantization, STE)
            lowbit_onnx.py     a low-bit model's export: QDQ int8, 2-bit MatMulNBits packing
            hardware.py        CPU-aware quantization defaults
  validate  parity.py          ONNX vs PyTorch at unseen shapes
            verify.py          artifact checks: hashes, external data, symlinks, loading
            inspection.py      what is inside a graph: size, dtypes, ops, fusion, external data
            evaluation.py      task metrics with CIs, fidelity against another artifact
            metrics.py         metric and fidelity formulas (accuracy, F1, SQNR, KL, ...)
            bench.py           latency/throughput/memory on execution providers
            gate.py            budgets files and their verdicts
            report.py          report.json/md/html and the figures they compare
            summary.py         the at-a-glance text block of a report
  basics    models.py          loading, per-architecture facts, saving (tokenizer, shared layers)
            data.py            datasets (built-in and user files), tokenizers
            augment.py         augmented text for distillation
            artifacts.py       artifact directory layout, manifest, atomic writes, hashes
            fingerprint.py     what a cached step depends on, hashed
            locking.py         one writer per output
            sessions.py        onnxruntime CPU sessions (with a loadable-model check)
            providers.py       execution providers: names, checks, placement, the session factory
            environment.py     library versions and CPU facts
            doctor.py          `edgeslim doctor`'s checks
            errors.py          EdgeslimError and its exit codes
            defaults.py        numbers several modules share: runs, bootstrap, parity tolerances
            options.py         typer options made from config fields (the training flags too)
            flags.py           plain option aliases commands share (--output, --force, --json, ...)
            ui.py              terminal output (only the runner layer and the commands print)
"""

__version__ = "0.1.0"
