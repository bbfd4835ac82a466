"""aeris.data"""
