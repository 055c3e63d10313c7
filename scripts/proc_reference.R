# Reference values for medauc's DeLong implementation, from R's pROC.
#   Rscript scripts/proc_reference.R IN_DIR OUT.json
# IN_DIR holds <name>.csv files with columns y (0/1, 1 = positive), a, b (scores, higher = more
# positive). For each: AUCs, DeLong variances and covariance, the paired DeLong test (Z, p, CI of
# the difference) and ci.auc(method = "delong") of each score. Written by
# scripts/make_proc_fixture.py, which calls this script; run that, not this one, to refresh
# tests/fixtures/proc_delong.json.
suppressMessages({library(pROC); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
stopifnot(length(args) == 2)
files <- sort(list.files(args[1], pattern = "\\.csv$", full.names = TRUE))
out <- list()
for (f in files) {
  d <- read.csv(f)
  ra <- roc(d$y, d$a, levels = c(0, 1), direction = "<", quiet = TRUE)
  rb <- roc(d$y, d$b, levels = c(0, 1), direction = "<", quiet = TRUE)
  t <- roc.test(ra, rb, method = "delong", paired = TRUE, conf.level = 0.95)
  ca <- ci.auc(ra, method = "delong", conf.level = 0.95)
  cb <- ci.auc(rb, method = "delong", conf.level = 0.95)
  name <- sub("\\.csv$", "", basename(f))
  out[[name]] <- list(
    auc_a = as.numeric(auc(ra)), auc_b = as.numeric(auc(rb)),
    var_a = var(ra, method = "delong"), var_b = var(rb, method = "delong"),
    cov = cov(ra, rb, method = "delong"),
    z = unname(t$statistic), p_value = t$p.value,
    ci_low = t$conf.int[1], ci_high = t$conf.int[2],
    ci_auc_a = as.numeric(ca)[c(1, 3)], ci_auc_b = as.numeric(cb)[c(1, 3)]
  )
}
out[["_meta"]] <- list(pROC = as.character(packageVersion("pROC")), R = R.version.string)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), args[2])
