"""aeris.model"""
