"""Stage two: train a student from the explanation cache alone (the teacher is never loaded).

``student_data`` turns cached rows into student batches (re-projecting teacher
explanations onto another tokenizer's tokens), ``losses`` holds the pure loss
functions, ``objectives`` one class per explanation family, ``trainer`` the loop.
"""
