"""The "Losses" section of ``sflnet train --help`` and ``sflnet evaluate --help``.

Generated from the loss registry when the help is shown (not when ``sflnet`` starts), so
it lists the plug-in losses too, each loss with its options (name=default, help).
"""

import click

from sflnet.losses import help_rows


class LossHelpCommand(click.Command):
    """A click command whose help ends with every loss and its options (:func:`sflnet.losses.help_rows`)."""

    def format_epilog(self, ctx, formatter):
        super().format_epilog(ctx, formatter)
        with formatter.section("Losses (set options inline: NAME(OPTION=VALUE,...), e.g. "
                               "pl+0.5*stft(window=8,window_fn=rect))"):
            formatter.write_dl(help_rows(), col_max=24)
