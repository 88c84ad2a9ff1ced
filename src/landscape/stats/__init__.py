"""landscape.stats"""
