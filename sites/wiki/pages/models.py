"""Wiki page model."""

from django.db import models
from django.urls import reverse


class Page(models.Model):
    """A single wiki page."""

    title = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    text = models.TextField()

    class Meta:
        ordering = ("title",)

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("page_detail", kwargs={"slug": self.slug})
