"""Blog post model."""

from django.db import models
from django.urls import reverse
from django.utils import timezone


class Post(models.Model):
    """A single blog post."""

    title = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    body = models.TextField()
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-created",)

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("post_detail", kwargs={"slug": self.slug})
