"""Builders for public benchmarks whose processed files users download by hand.

AV-MNIST (`avmnist`), MM-IMDb (`mmimdb`) and CMU-MOSI / CMU-MOSEI (`affect`)
read the files in `data.manual_dir` (formats: docs/benchmark_formats.md) and
cache them as array_record tfds datasets. Import the submodules directly; this
package imports nothing, so that `import robult_jax.data` stays light.
"""
