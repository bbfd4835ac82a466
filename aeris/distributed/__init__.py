"""aeris.distributed: the network on a SWiPe mesh, shared by training and inference.

`stage.MeshStage` is one rank's pipeline stage (module, window context, executor);
`inference.PipelineSampler` runs the diffusion sampler through the forward-only pipeline.
"""
