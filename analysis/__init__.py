"""mirrorhall.analysis"""
