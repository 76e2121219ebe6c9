"""Mutation testing for the critical paths: how much of the code's behaviour would the tests notice changing?"""
