"""aeris.evaluate"""
