"""aeris.forecast"""
