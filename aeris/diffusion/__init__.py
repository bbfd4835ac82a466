"""aeris.diffusion"""
