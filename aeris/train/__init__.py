"""aeris.train"""
