from django.db import models


class Order(models.Model):
    number = models.CharField(max_length=64, unique=True)      # the shop's order number
    phone = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)
